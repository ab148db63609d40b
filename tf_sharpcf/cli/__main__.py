"""`python -m tf_sharpcf.cli COMMAND ...` (= `tf-sharpcf COMMAND ...`)."""
import sys

from tf_sharpcf.cli import main

sys.exit(main())
