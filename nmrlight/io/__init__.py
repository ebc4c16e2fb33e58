"""Readers and writers for the files nmrlight consumes and produces (meshes, poses, masks, images)."""
