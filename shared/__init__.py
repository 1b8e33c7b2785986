"""Code two or more Pacekeeper services use: settings, event envelope, Kafka and DB helpers."""
