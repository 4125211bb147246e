"""Markdown tables, as the sweep's summary and `compare` print them."""


def markdown_table(header, rows, align=None):
  """A markdown table: `header` names, `rows` of cells (formatted as str).

  `align` gives one of 'l' or 'r' per column (default: the first left, the
  others right). Returns the table's lines joined by newlines, no final one.
  """
  align = align or 'l' + 'r' * (len(header) - 1)
  rule = ['---:' if a == 'r' else '---' for a in align]
  lines = [header, rule, *rows]
  return '\n'.join('| ' + ' | '.join(str(c) for c in line) + ' |'
                   for line in lines)
