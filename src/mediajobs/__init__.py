"""mediajobs: a self-hosted server for Tencent Cloud Infinite's job API and the COS object API."""

__version__ = "0.1.0"
