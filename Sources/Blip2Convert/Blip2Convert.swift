// Blip2Convert
