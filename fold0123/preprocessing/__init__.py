"""Dataset builders and input adapters: the bundled emoji era dataset (`preprocessing.emoji`), the emoji subcategory
classification benchmark in the ImageFolder layout (`preprocessing.emoji_classify`), the emoji retrieval set in
the MUGE layout (`preprocessing.muge_emoji`), their npm fetcher (`preprocessing.npm`; their salted ids, pins,
build markers and staged publish are common.build's), the scorer for the private answers
(`preprocessing.answers`), the adapters that turn a competition's ImageFolder or CSV + images layout into a
dataroot (`preprocessing.adapters`) and the MUGE LMDB packer (`preprocessing.pack_lmdb`)."""
