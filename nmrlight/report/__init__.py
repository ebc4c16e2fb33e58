"""The report of a refinement run: summary numbers (summary, accuracy), pictures (assets, plots) and
pages (summary_page, pages), put together by build."""
