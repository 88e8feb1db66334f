"""Route handlers of the HTTP API, one module per resource; `api.app` assembles them."""
