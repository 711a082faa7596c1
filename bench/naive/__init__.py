"""The naive baseline of bench/fanout.py: Channels fan-out the way the tutorials build it.

One consumer per socket, one channel-layer group per symbol, `group_send` per tick through
`RedisChannelLayer`, every consumer serialising its own JSON, served by daphne. Kept
deliberately unoptimised: it is the "before" every other figure is divided by.
"""
