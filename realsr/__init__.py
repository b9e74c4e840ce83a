"""Real-world arbitrary-scale pipeline (degradations, two-stage training); registers with BasicSR."""
