"""Notifications: subscriptions to the fleet's events, delivered to webhooks.

`notify.model` (pure) says which events a subscription wants and how severe each event is;
`notify.render` (pure) turns an event into the body a receiver gets (generic JSON, CloudEvents,
a Slack-style message) and signs it with HMAC; `notify.store` keeps subscriptions and their
secrets in the hub's data dir; `notify.jetstream` is the only module that speaks NATS (one
durable consumer per subscription and stream); `notify.service` delivers, retries with backoff
and keeps what `fleetbus notify status` shows.
"""
