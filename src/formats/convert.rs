//! The one copy loop that converts any reader into any writer.
