// Blip2ModelFile
