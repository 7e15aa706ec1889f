//! The REST quote poller: `/quote` snapshots within the plan's rate limit, published to their
//! own topic. Useful when markets are closed or a free key sees few US trades.
