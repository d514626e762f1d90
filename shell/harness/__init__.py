"""Tools that watch a running system from the outside: the demo and the chaos suite use them."""
