"""The operators' console: the web dashboard and API, the live alert feed, and reading alerts from Redis."""
