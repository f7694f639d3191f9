"""Security probes: headers, TLS and transport of the public edge."""
