"""bdn's web page (Streamlit): `bdn app` starts app/bdn_app.py; app/logic.py holds what it does, browser-free."""
