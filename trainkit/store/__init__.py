"""What trainkit keeps on disk: the one atomic write, the checkpoint file format and its safe load, the run directory."""
