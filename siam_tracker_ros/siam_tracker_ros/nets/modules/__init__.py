"""
Learned modules of the seed papers, as small ``nn.Module`` components for ``nets.train_net``.

Each module starts as the identity of the network it is inserted into (a zero-initialised gate
or output layer), so switching one on leaves a pre-trained NanoTrack's outputs unchanged until
training moves it: ``margin`` (SiamMargin loss), ``st_fusion`` and ``da_attention`` (DASTSiam),
``tafa`` (TAFA channel shift, feature modulation, adversarial dropout) and
``layer_aggregation`` (SiamRPN++).
"""
