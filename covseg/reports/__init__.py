"""covseg.reports"""
