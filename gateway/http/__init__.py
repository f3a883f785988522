"""The HTTP front end: FastAPI routes that only convert messages to and from the service layer."""
