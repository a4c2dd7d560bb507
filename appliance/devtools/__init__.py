"""The demo and the virtual sound card: harness, not player.

`make demo` and the tests need a sound card on machines without one (a private JACK server
with the dummy backend behind an ALSA PCM); the player on the box never imports this
package, so nothing of jackd or jack2's shared-memory details is part of what runs a show.
"""
