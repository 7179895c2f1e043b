"""Messages over STOMP: FTS3's monitoring messages and the broker connections that carry them."""
