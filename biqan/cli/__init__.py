"""biqan's commands (`bdn label`, `bdn train-biqan`, `bdn select`), registered in bdn.cli by import path."""
