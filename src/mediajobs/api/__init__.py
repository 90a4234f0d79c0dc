"""The HTTP side: routing, signatures, XML, and the COS object API."""
