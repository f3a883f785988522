"""Load-testing helpers for SAMO serving (a light closed-loop HTTP load generator)."""
