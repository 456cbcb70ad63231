"""From files to models: readers for every weight format, GGUF codecs, quantised layers (the ``ops`` given to the
models), the key-name tables, ``identify_component`` and the ``load_*`` functions, LoRA, and the writers the tiny
kit and the tests use to make files in the same formats."""
