"""Testing probes: the API's contract, errors, rate limits and webhooks, exercised live."""
