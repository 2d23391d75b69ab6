"""The streaming service: Kafka/Faust worker, risk store, replay and alerts."""
