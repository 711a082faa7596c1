"""The market-data WebSocket API v1 (/ws/v1/market): channel names, request limits, the consumer."""
