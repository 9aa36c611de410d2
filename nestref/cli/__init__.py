"""The commands: parse the arguments, call the wings below, print what they return."""
