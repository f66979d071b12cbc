"""Run directories -> results, without torch: run records and their grouping (`records`), tables and files
(`render`: terminal, Markdown, CSV, JSON), plots (`plots`) and the published numbers (`anchors`)."""
