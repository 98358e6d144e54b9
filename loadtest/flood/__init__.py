"""UDP flood generator (gen.c) and the flood benchmark; see loadtest/README.md."""
