"""The demo: a product simulator, a live scorecard, the performance review and `make demo`."""
