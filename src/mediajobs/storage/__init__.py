"""Object bytes (blob stores) and the object service that pairs them with metadata."""
