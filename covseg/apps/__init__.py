"""Applications built on covseg (integrations with other tools); nothing in covseg imports them."""
