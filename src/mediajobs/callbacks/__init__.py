"""Job callbacks."""
