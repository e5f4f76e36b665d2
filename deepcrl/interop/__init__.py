"""Bringing agents trained with other code into deepcrl (`deepcrl import`)."""
