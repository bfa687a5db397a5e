"""Image support (paper Section 6.3, App. F.2): U-Net epsilon-model, image readers, conv critic,
classifier-feature FID/KID, and diffusers interoperability. Submodules import lazily so the toy
path never pays for them."""
