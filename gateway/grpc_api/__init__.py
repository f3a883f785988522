"""The gRPC front end (`samo.v1`): a servicer that only converts messages to and from the service layer."""
