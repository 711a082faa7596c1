"""The producer: per-symbol state, order books, candles, references, market-channel messages, the run loop, replay and recording."""
