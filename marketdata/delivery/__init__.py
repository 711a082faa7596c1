"""From Redis to the sockets of one server process: the fan-out hub, outboxes, the history store for resume, connection counting."""
