"""Infrastructure probes: the network in front of the system and what it reaches."""
