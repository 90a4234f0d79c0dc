"""The durable job engine: model, store, service, worker."""
