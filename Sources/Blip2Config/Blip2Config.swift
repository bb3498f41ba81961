// Blip2Config
