"""biqan: the blind image quality network that judges Deep Image Prior iterates (score files, network, selection).

It builds only on bdn's ground floor (io, noise, metrics). Its pieces arrive with the quality-network issue.
"""
