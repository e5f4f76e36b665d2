"""`deepcrl import`: bring a teacher trained with the paper's code (or a JaxGCRL CRL agent) into deepcrl."""

from __future__ import annotations

from deepcrl.interop.config import ImportConfig


def run(cfg: ImportConfig) -> int:
    from deepcrl.cli import json_output, print_json
    from deepcrl.errors import DeepcrlError
    from deepcrl.interop import jaxgcrl

    with json_output(cfg.json):
        if cfg.source == "jaxgcrl":
            summary = jaxgcrl.import_run(cfg.run, cfg.out, checkpoint=cfg.file)
        else:
            from deepcrl.interop.scaling_crl import import_run

            if jaxgcrl.is_jaxgcrl_run(cfg.run):
                raise DeepcrlError(jaxgcrl.WRONG_VERB.format(run=cfg.run))
            summary = import_run(cfg.run, cfg.out, checkpoint=cfg.file)
    if cfg.json:
        print_json(summary)
    elif cfg.source == "jaxgcrl":
        print(f"imported {summary['checkpoint']} (JaxGCRL {summary['reference_env']}, MLP "
              f"{'x'.join(map(str, summary['actor_hidden']))}, critic {summary['critic']}) as a {summary['env']} "
              f"student-kind artifact: {summary['out']}")
    else:
        print(f"imported {summary['checkpoint']} ({summary['reference_env']}, actor {summary['actor_depth']}x"
              f"{summary['actor_width']}, critic {summary['critic_depth']}x{summary['critic_width']}) as a "
              f"{summary['env']} teacher: {summary['out']}")
    return 0
