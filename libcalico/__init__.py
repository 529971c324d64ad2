"""Shared library: resource model, selector language, datastores, service runtime."""
