"""The translation core: sans-I/O, it knows no sockets and no clocks of its own."""
