"""Downloads: RAD-ChestCT from Zenodo, LIDC-IDRI through the NBIA API, archives."""
