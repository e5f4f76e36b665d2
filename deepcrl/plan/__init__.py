"""Planning over the critic's learned distances: landmarks, a graph, all shortest paths, the next waypoint."""
