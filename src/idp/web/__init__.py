"""The thin HTTP surface: protocol routes, hosted pages, security middleware."""
