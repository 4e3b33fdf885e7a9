"""Hugging Face interoperability: conversion, memory estimates and recipes."""
