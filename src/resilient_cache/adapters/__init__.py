"""Adapters: implementations of CacheProtocol on a backend."""
