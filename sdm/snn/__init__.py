"""Spiking networks: neurons, their execution over T steps, energy accounting."""
