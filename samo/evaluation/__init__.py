"""Quality evaluations on real data that packages carry."""
