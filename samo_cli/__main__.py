from samo_cli.app import app

app()
